"""``dltrain init``: look at a CSV and write a commented starter config that trains as written.

Every decision is visible in the YAML: the detected delimiter, each column's type, the columns
left out and why (IDs, dates, free text, constants), how empty cells are filled, the task and
a network sized to the data.

reading.py reads the CSV once (JSON refused, decimal commas and missing-value markers found),
columns.py says what each column is and whether it is kept, and what the target's task is,
sections.py writes the YAML section by section with each decision commented, starter.py sizes
the network and puts it together.
"""

from .starter import StarterConfig, starter_config, write_starter_config

__all__ = ["StarterConfig", "starter_config", "write_starter_config"]
