"""airflow-secure-transfer command line: ``audit`` and ``fingerprint`` (see :mod:`.main`)."""
