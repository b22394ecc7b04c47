"""Charts of the framework answers: Vega-Lite specs with the data inline, rendered to SVG/PNG offline."""
