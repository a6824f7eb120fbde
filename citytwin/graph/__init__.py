"""The twin graph: relationships between things, queryable from Python and REST, exported as DTDL v3."""
