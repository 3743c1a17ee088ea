from django.apps import AppConfig


class ItemsConfig(AppConfig):
    name = "bench.stock.items"
    label = "items"
