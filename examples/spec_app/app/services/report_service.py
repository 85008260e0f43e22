# app/services/report_service.py — the spec's second task (cron "0 9 * * *").


def generate_report_task() -> dict:
    """Generate the daily report."""
    from asyncsched import logger

    logger.info("Generating the daily report")
    return {"status": "success"}
