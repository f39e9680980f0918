"""Offline-in-process evaluation of Pulse's models on simulator scenarios (`pulse evaluate`)."""
