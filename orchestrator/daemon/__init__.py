"""The running service: composition root, lanes, scheduler, intake, delivery, health."""
