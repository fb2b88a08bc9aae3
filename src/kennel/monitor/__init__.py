"""After promotion: reference profiles inside every model, drift statistics, `kennel monitor`."""
