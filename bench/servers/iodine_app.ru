# Iodine (C server, Ruby; built by bench/iodine_build.sh): HTTP hello world and WebSocket echo
# on "/", or with FANOUT=1 every message received is published to all subscribers with
# Iodine.publish (the fan-out runs in C).
FANOUT = ENV['FANOUT'] == '1'

# The WebSocket callbacks (Iodine's Rack upgrade extension).
module Peer
  def self.on_open(client)
    client.subscribe(:room) if FANOUT
  end

  def self.on_message(client, data)
    if FANOUT
      Iodine.publish(:room, data)
    else
      client.write(data)
    end
  end
end

HELLO = [200, { 'Content-Type' => 'text/plain; charset=utf-8', 'Content-Length' => '12' },
         ['Hello World!']].freeze
UPGRADED = [0, {}, []].freeze

run(lambda do |env|
  if env['rack.upgrade?'] == :websocket
    env['rack.upgrade'] = Peer
    UPGRADED
  else
    HELLO
  end
end)
