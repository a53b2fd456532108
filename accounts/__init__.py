"""Entra ID identities: which Django user an Entra ID account (tenant + object id) is."""
