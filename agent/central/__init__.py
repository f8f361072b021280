"""The central link: the MQTT 5 contract, store-and-forward, commands, config push."""
