"""grugctl as a terminal's foreground job, for tests that send it a real SIGINT.

A test runner started in the background ignores SIGINT and its children inherit that, so this driver
restores the default handler before it becomes grugctl, as a shell does for a foreground job (exec, not
preexec_fn, which would fork a JAX-threaded process):
`[sys.executable, "-c", DEFAULT_SIGINT_THEN_GRUGCTL, *grugctl_args]`.
"""

DEFAULT_SIGINT_THEN_GRUGCTL = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'grugctl.cli', *sys.argv[1:]])"
)
