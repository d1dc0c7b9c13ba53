"""Training: plain step functions, schedules, checkpoints, monitors."""
