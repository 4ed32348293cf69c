-- Shared settings for the ferrovs pktgen scripts.
package.path = package.path .. ";?.lua;scripts/pktgen/?.lua"
require "Pktgen"

FERROVS_EXT_MAC = "02:00:00:00:01:01"   -- ferrovs ext port: EDIT
VIP        = "10.0.1.100"
CLIENT_MIN = "100.64.0.1"
CLIENT_MAX = "100.64.255.254"
TX, RX     = "0", "1"
SECONDS    = 10

function setup_range(proto, size)
    pktgen.stop("all")
    pktgen.clr()
    pktgen.set(TX, "size", size)
    pktgen.set(TX, "rate", 100)
    pktgen.range.dst_mac(TX, "start", FERROVS_EXT_MAC)
    pktgen.range.dst_ip(TX, "start", VIP)
    pktgen.range.dst_ip(TX, "inc", "0.0.0.0")
    pktgen.range.dst_ip(TX, "min", VIP)
    pktgen.range.dst_ip(TX, "max", VIP)
    pktgen.range.src_ip(TX, "start", CLIENT_MIN)
    pktgen.range.src_ip(TX, "inc", "0.0.0.1")
    pktgen.range.src_ip(TX, "min", CLIENT_MIN)
    pktgen.range.src_ip(TX, "max", CLIENT_MAX)
    pktgen.range.src_port(TX, "start", 1024)
    pktgen.range.src_port(TX, "inc", 1)
    pktgen.range.src_port(TX, "min", 1024)
    pktgen.range.src_port(TX, "max", 65535)
    pktgen.range.dst_port(TX, "start", 80)
    pktgen.range.dst_port(TX, "inc", 0)
    pktgen.range.dst_port(TX, "min", 80)
    pktgen.range.dst_port(TX, "max", 80)
    pktgen.range.ip_proto(TX, proto)
    if proto == "tcp" then pktgen.range.tcp_flags(TX, "syn") end
    pktgen.range.pkt_size(TX, "start", size)
    pktgen.range.pkt_size(TX, "inc", 0)
    pktgen.range.pkt_size(TX, "min", size)
    pktgen.range.pkt_size(TX, "max", size)
    pktgen.set_range(TX, "on")
end

-- Run for `secs`, print rx/tx pps each second, return average rx pps.
function measure(label, secs)
    pktgen.start(TX)
    pktgen.delay(1000) -- warm-up
    local sum = 0
    for i = 1, secs do
        pktgen.delay(1000)
        local r = pktgen.portStats("all", "rate")
        local tx, rx = r[tonumber(TX)].pkts_tx, r[tonumber(RX)].pkts_rx
        printf("%s %2ds  tx %10d pps  rx %10d pps\n", label, i, tx, rx)
        sum = sum + rx
    end
    pktgen.stop(TX)
    pktgen.delay(500)
    return sum / secs
end
