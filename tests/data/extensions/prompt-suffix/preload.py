def preload(parser):
    parser.add_argument("--prompt-suffix-default", type=str, default="in the style of tests",
                        help="the text the Prompt suffix extension appends (test extension)")
