"""Every use of Textual's private API in chatui, each kept for a measured gain.

Nothing outside this package imports a private Textual module or touches a
private attribute (the Composer's `_on_key` override is the hook Textual's
TextArea guide documents). tests/test_private_api.py holds the rest of chatui
to that for the hooks listed here (it reads them from this docstring), and
checks that every module here has an entry and every entry a module and a
guarding test. Textual is pinned to the minor version these were measured on
(8.2, in pyproject.toml); a new minor gets the A/B again.

Gains are medians of interleaved A/B runs on 2 cores, 100x40, the module
removed against kept: `bench/terminal_escape.py` (Esc byte → stop visible in
a real pty), `bench/render_throughput.py` (tokens/s, last token → screen) and
`bench/stop_latency.py` (in-process breakdown). Commands and tables:
bench/README.md.

Ledger (module: private API touched; gain; guarding test; what would retire it)

- `input`, `terminal_driver`: `textual._xterm_parser.XTermParser`,
  `textual._parser.ParseError`, the parser's `_timeout_time`, a copy of
  `LinuxDriver.run_input_thread` (its `fileno`, `exit_event`, `_debug`), and
  `textual.constants.ESCAPE_DELAY` set at start. Gain: a lone Esc reaches the
  app 10 ms after its byte, not 100 to 200 ms: lone Esc → stop visible p50
  138 → 25 to 33 ms, measured with the other changes made for Esc at the
  time (`escape`, `frame_clock` and `footer` below among them). Guard:
  tests/test_terminal_input.py (the parser on a fake clock, a real pty with a
  one-minute poll). Retire: Textual's
  input thread waiting until the parser's deadline instead of a 100 ms poll,
  and an App setting for the escape delay.
- `escape` (`App._build_driver` wrapping the driver's `send_message`, and
  `Screen._on_timer_update`): an Esc acts on its first trip through the loop,
  before a frame that was due; so does a Ctrl+C, which stops a reply the same
  way (guarded by tests/test_keys.py, "from the terminal stops on its first
  trip"). Gain: lone Esc → stop visible p50 26.4 and
  26.9 → 24.6 and 24.7 ms (two rounds each, with every other Esc change in
  place; the kitty Esc shows no difference); in-process ack p50 0.9 → 0.3 ms, p99 8.3 →
  1.1 ms. Guard: tests/test_app.py (first trip, frame due before the
  key). Retire: Textual delivering keys as callbacks rather than coroutines,
  or an App hook called as a key arrives from the driver.
- `frame_clock` (`Screen._on_timer_update`, the screen's `_message_queue`,
  widgets' `_repaint_required` and `_layout_required`): the end of a reply and
  a stop are drawn at once, not at the next tick of the 60 Hz clock. Gain:
  last token → screen 16.6 → 6.6 ms (1 message), 12.3 → 6.7 ms (200);
  stop drawn p99 31.5 → 18.3 ms. Guard: tests/test_frame_clock.py and the stop
  draw tests in tests/test_app.py. Retire: a public "refresh now" on Screen.
  Its `draw_widgets_now` (the compositor's `visible_widgets`, `update_widgets`
  and `render_update`, `App._display`, `App._background_screens`, and
  `App._batch_count` set to 0 around the one draw) draws a stop's status line
  in a frame of its own, with no layout, before the marker and the reply's
  last text. Gain: kitty Esc → visible p50 19.3 and 18.2 → 5.1 and 5.1 ms,
  p99 30.5 and 38.1 → 17.7 and 16.0 ms; lone Esc p50 32.0 and 30.0 → 18.1 and
  18.9 ms (two interleaved rounds each; the batch part alone took the kitty
  p99 from 25.9 to 18.0). Guard: tests/test_frame_clock.py (only the widget's
  row, during a batch, not under a dialog) and
  tests/test_app.py::test_the_stop_shows_on_the_status_line_before_anything_else_is_drawn.
  Retire: a public partial refresh of given widgets, and Textual's Markdown
  not holding a batch open across awaits.
- `footer` (`textual.widgets._footer.FooterKey`, `FooterKey._disabled`, the
  `Footer.compact` reactive, `Footer._bindings_ready`): the footer restyles
  keys in place instead of rebuilding at every turn's start and end, drops
  the watchers of removed keys (Textual's Footer keeps them: a leak), asks
  for one rebuild at a time, and rebuilds on its own queue (Textual has the
  screen wait for a rebuild after a refresh, holding back every other
  widget's; a reply's end missed its early draw). Gain: kitty Esc → visible p50 35.8 → 29.2
  ms, p90 51.6 → 42.2 ms; stop drawn p99 31.3 → 18.3 ms; at startup one
  rebuild instead of four, each 8 to 12 ms of the main thread in the frames
  just after the first. Guard: tests/test_footer.py. Retire: Footer updating
  enabled states in place, pruning its watchers, not asking for a recompose
  while one is pending, and not rebuilding on the screen's queue.
- `light_scrollbar` (`Widget._vertical_scrollbar`, `App._start_widget`,
  `ScrollBarRender.render_bar`): the message list's bar is drawn as strips,
  without Rich's console, on every frame of an anchored reply. Gain: kitty
  Esc → visible p50 33.3 → 29.2 ms, p90 47.7 → 42.2 ms; last token → screen
  7.6 → 6.6 ms. Guard: tests/test_light_scrollbar.py (same strips and mouse
  actions as Textual's bar). Retire: Textual's ScrollBar rendering strips
  itself, or caching its rows.
- `top_down` (`TopDownStack`: overrides `Widget.arrange`, which Textual
  documents as best left alone, and relies on its arrangement cache being
  keyed by the full size): a reply's parts are arranged once per layout, not
  two or three times. Gain (21 runs each, interleaved, render_throughput
  100x40): last token → screen at the reply's end 7.65 → 7.40 ms (1 message)
  and 7.93 → 7.09 ms (200); tokens/s 5096 → 5365 and 4288 → 4685. Guard:
  tests/test_top_down_stack.py (the same placements as Textual's at every
  height; one arrangement per layout). Retire: Textual not re-arranging a
  container whose layout does not depend on its height.
- `first_draw` (`Screen._compositor_refresh`, `App._batch_count`): the
  approval dialog knows when its first frame, buttons included, went to the
  terminal, so a key read before then (typed for the composer) cannot answer
  it. Correctness, not speed: `call_after_refresh` also runs while a batch
  holds every frame back. Guard:
  tests/test_tools_app.py::test_keys_typed_before_the_approval_dialog_was_drawn_never_answer_it
  (and every test that answers the dialog, which waits for `shown_at`).
  Retire: a public Screen event or callback after a frame is written.
- `bindings` (`DOMNode._bindings`): whether the focused widget binds Esc, so
  a dropdown or dialog gets Esc before the stop does. Correctness, not speed:
  the public `Screen.active_bindings` calls `check_action`, where this is
  asked. Guard: tests/test_app.py::test_a_focused_widget_that_binds_escape_gets_it_first.
  Retire: a public accessor for a node's own bindings.
- `repeat_lines` (`RepeatedMiddle`: overrides `Widget.render_lines`, the
  compositor's call for a widget's lines with its borders, which Textual's
  guide does not describe, and `Widget.render_line` with a blank strip): a
  reply's box renders one line between its borders and repeats it, where
  Textual renders every line in sight on each frame the reply grows. Gain
  (render_throughput prose 100x40 `--repeat 3`, three interleaved rounds
  each, median of the rounds, without → with): tokens/s 6532 → 6973 (1
  message) and 5782 → 6465 (200); last token → screen at the reply's end
  8.2 → 7.2 ms and 9.0 → 7.1 ms, with the stream paused 17.6 → 12.8 and
  20.5 → 15.5 ms. Guard:
  tests/test_frame_clock.py::test_reply_box_renders_like_every_line_rendered
  (the same strips as Textual's for crops across both borders, the middle
  only and both sides cut). Retire: Textual keeping a widget's rendered
  lines when only its height changed, or rendering a blank container's
  middle once.
- `after_layout` (`Screen.screen_layout_refresh_signal`, which Textual's docs
  do not list): the message list folds what went out of sight after each
  layout, because a view anchored to a growing reply scrolls without calling
  the scroll watchers. Gain (the same benchmark and rounds, the subscription
  removed → kept): with 200 earlier messages, last token → screen at the
  reply's end 25.9 → 6.9 ms, paused 41.8 → 16.3 ms, tokens/s 5425 → 6130
  (nothing folds while a reply streams without it); with 1 message, tokens/s
  7284 → 7236 and last token → screen 13.7 → 6.2 ms, runs of 6 to 14 ms on
  both sides. Guard:
  tests/test_message_list.py::test_a_streaming_reply_folds_its_early_blocks_as_it_grows
  (its early blocks fold with no scroll and no send). Retire: a public
  Screen event after each layout, or scroll watchers called when a view
  anchored to its end scrolls.

Removed after the same A/B showed no gain beyond the run-to-run spread: a
compositor that reused its last layout's map (no figure moved) and a
paragraph that skipped layouts (tokens/s 4826 → 5626 and 3846 → 4645 with 200
messages, without it). `TopDownStack` was removed on that first A/B (n=2,
tokens/s within spread), then brought back when a 21-run A/B traced the
last-token-to-screen regression to the layout it saves.
"""
