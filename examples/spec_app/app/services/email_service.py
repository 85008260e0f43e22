# app/services/email_service.py — the spec's task function ("2. Create Task Functions").
# Renames: core.logger -> asyncsched (logger), core.event_bus.EventBus -> asyncsched.sync.EventBus.


def process_pending_emails_task(batch_size: int = 10) -> dict:
    """Scheduled task function."""
    from asyncsched import logger
    from asyncsched.sync import EventBus

    logger.info(f"Processing {batch_size} pending emails")
    # Your task logic here

    # Optionally publish events
    event_bus = EventBus()
    event_bus.publish(
        event_type="email.batch_processed",
        source_agent="email-agent",
        payload={"batch_size": batch_size},
    )

    return {"status": "success", "processed": batch_size}
