-- Frame size sweep with the UDP setup.
package.path = package.path .. ";?.lua;scripts/pktgen/?.lua"
require "common"
for _, size in ipairs({64, 128, 256, 512, 1024, 1280, 1518}) do
    setup_range("udp", size)
    local rx = measure("udp" .. size, 5)
    printf("size %4d: %.3f Mpps, %.2f Gbit/s\n", size, rx / 1e6, rx * (size + 20) * 8 / 1e9)
end
