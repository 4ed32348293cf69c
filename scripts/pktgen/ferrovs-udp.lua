-- 64-byte UDP through ferrovs NAT, clients spread for RSS. See README.md.
package.path = package.path .. ";?.lua;scripts/pktgen/?.lua"
require "common"
setup_range("udp", 64)
local rx = measure("udp64", SECONDS)
printf("ferrovs UDP 64B: %.2f Mpps forwarded (line rate 10G: 14.88 Mpps)\n", rx / 1e6)
