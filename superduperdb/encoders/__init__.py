"""Encoder families, one module each, imported on use:

- :mod:`superduperdb.encoders.numpy`: ``array(dtype, shape)``
- :mod:`superduperdb.encoders.torch`: ``tensor(dtype, shape)`` (needs the ``torch`` extra)
- :mod:`superduperdb.encoders.pillow`: ``pil_image``
- :mod:`superduperdb.encoders.audio`: ``audio`` (samples + sample rate)
- :mod:`superduperdb.encoders.pickle`: ``pickle`` (any picklable object)
"""
