"""The experiment's own stages: `new` (scaffold.py copies the starter and registers it), `diff`
(diffrender.py renders what codediff finds) and `sync` (sync.py merges the core's changes into an
experiment's copies)."""
