"""Running calls: the scheduler's three priority queues, tasks and chains, deadlines, the
watchdog, circuit breakers, metrics, and event-trigger matching."""
