"""Data layer: typed outcomes and traffic logs, loaders, validation, splits, prices, synthetic traffic."""

from router.data.schema import TRAFFIC_LOG_SCHEMA, DroppedRows, Outcomes

__all__ = ["TRAFFIC_LOG_SCHEMA", "DroppedRows", "Outcomes"]
