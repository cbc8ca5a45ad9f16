"""What a run reports: the report dictionary and its JSON/CSV files (``report``),
the HTML page and its SVG charts (``html``, ``svg``), the live console view
(``live``) and the ``--check`` thresholds (``checks``)."""
