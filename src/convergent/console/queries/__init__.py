"""Small read functions behind the console's pages: one module per page, keyset pagination,
every statement on an index (bench/console.py times them against 1,000,000 runs)."""

from convergent.console.queries.paging import Page, decode_cursor, encode_cursor, id_floor

__all__ = ["Page", "decode_cursor", "encode_cursor", "id_floor"]
