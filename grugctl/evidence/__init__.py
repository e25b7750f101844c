"""Deciding with the records: compare.py (which rows compare, the tests, the verdicts), stats.py (paired
and Welch t-tests, power, with scipy), comparerender.py (the table as text, Markdown and HTML), plot.py
(mean curves over seeds)."""
