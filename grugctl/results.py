"""The keys every experiment's results JSON holds; `grugctl run` and `grugctl check` both rely on them."""

RESULT_KEYS = (
    "experiment", "commit", "dirty", "seed", "smoke", "config", "steps", "tokens", "compile_seconds",
    "train_seconds", "tokens_per_s", "mfu", "final_train_loss", "val_loss", "val_bpb", "target_val_bpb",
    "time_to_target_s", "curve", "jax_version", "platform", "date",
)
