"""Electric distribution grid models: topology, outages, restoration (FLISR) and reliability.

Everything works on :class:`~citytwin.models.grid.tables.GridTables` (see ``tables.py`` for the
conventions); nothing here touches the database.

* :mod:`.topology` - supply forest and switch zones (:class:`Topology`), :func:`assignments`
* :mod:`.impact` - precomputed single-failure impact per asset (:class:`ImpactTable`)
* :mod:`.outages` - failures from flood depths, events or sampling; :func:`outage`
* :mod:`.flisr`, :mod:`.restoration` - fault isolation and service restoration (:func:`restore`)
* :mod:`.effects`, :mod:`.reliability_analytical`, :mod:`.reliability_montecarlo` - reliability
* :mod:`.overrides` - ``COMPONENT.FIELD=VALUE`` what-ifs; :mod:`.report` - :func:`reliability_report`
"""

from citytwin.models.grid.impact import ImpactTable
from citytwin.models.grid.outages import (
    Outage,
    failures_from_event,
    failures_from_flood,
    outage,
    outage_from_device,
    sample_failures,
)
from citytwin.models.grid.overrides import apply_overrides
from citytwin.models.grid.report import reliability_report
from citytwin.models.grid.restoration import Restoration, restore
from citytwin.models.grid.tables import GridTables
from citytwin.models.grid.topology import Topology, assignments
from citytwin.models.grid.validate import validate_grid

__all__ = ["GridTables", "ImpactTable", "Outage", "Restoration", "Topology", "apply_overrides", "assignments",
           "failures_from_event", "failures_from_flood", "outage", "outage_from_device", "reliability_report",
           "restore", "sample_failures", "validate_grid"]
