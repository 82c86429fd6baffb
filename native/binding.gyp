{
  "variables": {
    "weft_sanitize%": "0"
  },
  "targets": [
    {
      "target_name": "weft_native",
      "sources": ["src/addon.cc", "src/io-loop.cc", "src/packet.cc", "src/tcp-relay.cc", "src/tun-forwarder.cc", "src/udp-relay.cc", "src/offload.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [
        [
          "weft_sanitize=='1'",
          {
            "cflags_cc": ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"],
            "ldflags": ["-fsanitize=address,undefined"]
          }
        ]
      ]
    }
  ]
}
