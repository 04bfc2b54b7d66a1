"""Enrichment: what an event's raw fields tell once looked up.

An IP address gives a place and a network owner (:mod:`eventport.enrich.ip`); a user agent gives
a client, a platform and whether it is a bot. Plain Python with no HTTP or database: the import
pipeline calls it once per batch on the batch's distinct values, and the raw values are not kept.
"""
