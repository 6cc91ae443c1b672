"""Protocol-agnostic transfer core. Imports nothing from Airflow."""
