"""Airflow adapters of the trainbench core (operators); the core itself never imports Airflow."""
