"""Pipeline composition only: which components run, in what order, on which resources."""
