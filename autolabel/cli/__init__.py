"""Thin Typer commands; each module holds one command (or one command group)."""
