"""Use cases over the core: decoding and batch processing, replay, the worker loop and the
offset and recovery decisions. Pure Python; talks to the outside only through the ports
(plain callables and protocols) it is handed."""
