"""The dbt project run against the raw schemas (staging, marts, compatibility views), and whether it is current."""
