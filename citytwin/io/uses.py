"""The twin's building-use vocabulary and the mapping of common source codes onto it.

The vocabulary is what the energy-demand models distinguish. Source codes come from:

- OpenStreetMap ``building=*`` values (also CEA's ``category`` column, which holds the OSM tag),
  and ``amenity=*``/``shop=*`` where a building carries them;
- BAG ``gebruiksdoel`` (use of the units in a Dutch building; comma-separated when mixed: the first
  listed use wins, which is BAG's own order, not a majority vote);
- City Energy Analyst occupancy types (``1ST_USE``: MULTI_RES, SINGLE_RES, OFFICE, ...);
- plain English words already in the vocabulary (``"office"``, ``"Residential"``).

Anything not recognised becomes the default, ``"other"``: the reader does not guess that an
untagged building is a home. OSM ``building=yes`` (use unknown) is therefore ``"other"`` too.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

USES: tuple[str, ...] = ("residential", "apartment", "office", "retail", "school", "hospital", "warehouse",
                         "supermarket", "industrial", "other")
DEFAULT_USE = "other"

_OSM = {
    "residential": ["house", "detached", "semidetached_house", "semi-detached", "terrace", "residential",
                    "bungalow", "cabin", "farm", "houseboat", "static_caravan", "hut", "villa", "home",
                    "single_family", "dwelling"],
    "apartment": ["apartments", "apartment", "dormitory", "flats", "block_of_flats", "multi_family"],
    "office": ["office", "offices", "commercial", "government", "civic", "public", "townhall"],
    "retail": ["retail", "shop", "shops", "kiosk", "mall", "department_store", "restaurant", "cafe",
               "fast_food", "bar", "pub", "marketplace"],
    "school": ["school", "kindergarten", "university", "college", "education", "childcare"],
    "hospital": ["hospital", "clinic", "doctors", "healthcare", "nursing_home"],
    "warehouse": ["warehouse", "storage", "depot", "hangar", "barn", "shed", "storage_tank", "garages",
                  "garage", "parking", "carport"],
    "supermarket": ["supermarket", "grocery", "convenience", "foodstore"],
    "industrial": ["industrial", "factory", "manufacture", "works", "plant", "power", "substation",
                   "transformer_tower", "data_center"],
}

# BAG gebruiksdoel (Dutch building register): one word per unit use.
_BAG = {
    "woonfunctie": "residential",
    "kantoorfunctie": "office",
    "winkelfunctie": "retail",
    "onderwijsfunctie": "school",
    "gezondheidszorgfunctie": "hospital",
    "industriefunctie": "industrial",
    "logiesfunctie": "other",
    "bijeenkomstfunctie": "other",
    "sportfunctie": "other",
    "celfunctie": "other",
    "overige gebruiksfunctie": "other",
}

# City Energy Analyst occupancy types.
_CEA = {
    "multi_res": "apartment", "single_res": "residential", "office": "office", "retail": "retail",
    "school": "school", "university": "school", "hospital": "hospital", "industrial": "industrial",
    "foodstore": "supermarket", "restaurant": "retail", "coolroom": "warehouse", "hotel": "other",
    "gym": "other", "swimming": "other", "serverroom": "industrial", "lab": "other", "museum": "other",
    "library": "other", "parking": "warehouse",
}


def _key(code: str) -> str:
    return re.sub(r"[\s\-]+", "_", code.strip().lower())


def _lookup() -> dict[str, str]:
    table: dict[str, str] = {use: use for use in USES}
    for use, codes in _OSM.items():
        table.update({_key(code): use for code in codes})
    table.update({_key(code): use for code, use in _BAG.items()})
    table.update({_key(code): use for code, use in _CEA.items()})
    return table


USE_LOOKUP: dict[str, str] = _lookup()


def normalise_codes(values: pd.Series) -> pd.Series:
    """Lower-case, trimmed first code of each value (``"woonfunctie,winkelfunctie"`` -> ``"woonfunctie"``)."""
    text = values.astype("string").str.strip().str.lower()
    first = text.str.split(r"\s*[,;|]\s*", n=1, regex=True).str[0]
    return first.str.replace(r"[\s\-]+", "_", regex=True)


def map_uses(*candidates: pd.Series | None, index: pd.Index, default: str = DEFAULT_USE) -> pd.Series:
    """The twin use of every row from candidate source columns, first match wins.

    Parameters
    ----------
    candidates
        Source columns in order of preference (e.g. BAG gebruiksdoel, CEA 1ST_USE, OSM shop,
        OSM amenity, OSM building). ``None`` entries are skipped.
    index
        Index of the result.
    default
        Use for rows no candidate recognises; must be in ``USES``.
    """
    if default not in USES:
        raise ValueError(f"default use {default!r} is not one of {USES}")
    result = pd.Series(pd.NA, index=index, dtype="string")
    for column in candidates:
        if column is None:
            continue
        # Codes repeat a lot: normalise and look up each distinct value once.
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        if len(uniques) == 0:
            continue
        mapped = normalise_codes(pd.Series(uniques)).map(USE_LOOKUP).to_numpy(dtype=object)
        values = np.where(codes >= 0, mapped[np.maximum(codes, 0)], None)
        result = result.fillna(pd.Series(values, index=index, dtype="string"))
    return result.fillna(default).astype(object)


def shop_use(values: pd.Series) -> pd.Series:
    """OSM ``shop=*``: food shops are supermarkets, any other shop is retail; no shop stays null."""
    mapped = normalise_codes(values).map(lambda code: "supermarket" if USE_LOOKUP.get(code) == "supermarket"
                                         else "retail" if isinstance(code, str) else None)
    return mapped.where(values.notna(), None)


def is_known_use(values: np.ndarray | pd.Series) -> np.ndarray:
    """True where a value is in the twin's vocabulary."""
    return np.isin(np.asarray(values, dtype=object), USES)
