"""citytwin: a city-scale geospatial digital twin.

>>> import citytwin
>>> twin = citytwin.connect()   # doctest: +SKIP
"""

__version__ = "0.1.0"


def connect(url: str | None = None, **kwargs):
    """Open the twin (see :func:`citytwin.client.connect`)."""
    from citytwin.client import connect as _connect

    return _connect(url, **kwargs)
