"""Certificates for HTTPS: uploads, ACME orders and renewals, kept in the database."""
