#!/usr/bin/env -S node --initial-old-space-size=64
require('../dist/relay.js');
