"""JSON Schemas and example protocols, shipped as package data."""
