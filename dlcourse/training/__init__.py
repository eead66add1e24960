"""Training: the one loop (trainer.py) and its modes (modes.py), and what it needs: losses and
penalties, metrics, optimizers, schedules, checkpoints, the device and threads, several
processes. Jobs that drive it (train, resume, sweeps) are in dlcourse/app/."""
