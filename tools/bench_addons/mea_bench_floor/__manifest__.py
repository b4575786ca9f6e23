{
    "name": "Benchmark floor (marketing_event_automation tools only)",
    "summary": "A trivial public JSON route, the floor tools/bench_single_event.py measures the API against",
    "version": "18.0.1.0.0",
    "license": "LGPL-3",
    "author": "marketing_event_automation",
    "depends": ["base"],
    "installable": True,
}
