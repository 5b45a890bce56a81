"""The methods: networks and distillation objectives found by name, configurations, training, teachers, the engine."""
