"""citytwin: a city-scale geospatial digital twin.

>>> import citytwin
>>> twin = citytwin.connect()   # CITYTWIN_DATABASE_URL, else the embedded local database
>>> sorted(twin.grid())
['lines', 'nodes', 'switches']

See :mod:`citytwin.client` for what a twin answers.
"""

__version__ = "0.1.0"


def connect(url: str | None = None, **kwargs):
    """Open the twin (see :func:`citytwin.client.connect`).

    >>> twin = connect()
    >>> twin.summary()["crs"].startswith("EPSG:")
    True
    """
    from citytwin.client import connect as _connect

    return _connect(url, **kwargs)
