"""Model name -> pool -> instance: routing table, balancers, instance state."""

from .balancers import BALANCERS, Balancer
from .instance import Instance
from .router import Pool, RoutingTable

__all__ = ["BALANCERS", "Balancer", "Instance", "Pool", "RoutingTable"]
