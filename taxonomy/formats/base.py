"""What every taxonomy format shares: the error it raises and the limits it enforces."""

from __future__ import annotations

from contextvars import ContextVar

MAX_NODES = 100_000
# The node limit of the parse under way (parse_taxonomy's ``max_nodes``); parsers read it while they
# collect, so an oversized file stops at the first node too many rather than after the whole file.
NODE_LIMIT: ContextVar[int] = ContextVar("taxonomy_node_limit", default=MAX_NODES)
MAX_NAME_LENGTH = 255
MAX_KEY_LENGTH = 1024  # path keys: up to MAX_DEPTH escaped names
MAX_DEPTH = 32  # roots are depth 0
MAX_INPUT_CHARS = 64 * 1024 * 1024


class TaxonomyFormatError(ValueError):
    """A taxonomy file is malformed; the message starts with the line at fault where one is known.

    ``line`` is 1-based; ``node`` is the key (or path) of the node at fault, where there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        node: str | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.line = line
        self.node = node
        self.column = column
        where = ""
        if line is not None:
            where = f"line {line}" + (f" column {column}" if column is not None else "")
        super().__init__(f"{where}: {message}" if where else message)
