"""Code the tests share: real web and Celery processes, HTTP without a client library, polling."""
