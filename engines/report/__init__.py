"""The accuracy-drift report (``cpnet report``): :mod:`.report` measures every variant against the float model
through ``engines.open``; :mod:`.pages` turns the result into plots, report.md and report.html."""
