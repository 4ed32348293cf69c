-- TCP SYN of new clients: new connections per second through ferrovs.
package.path = package.path .. ";?.lua;scripts/pktgen/?.lua"
require "common"
setup_range("tcp", 64)
local rx = measure("syn", SECONDS)
printf("ferrovs new TCP connections: %.2f M/s forwarded\n", rx / 1e6)
