"""OGC API - Features Part 1 (Core) over the twin's PostGIS tables: collections, queries, GeoJSON."""
