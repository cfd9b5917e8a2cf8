"""Training: strategies (config -> Plan), the LightningModule, callbacks, validation, and one run end to end."""
