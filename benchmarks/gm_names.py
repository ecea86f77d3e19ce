"""The General MIDI level 1 names: the 128 melodic programs and the percussion keys (channel 10)."""

GM_PROGRAMS = (
    "Acoustic grand piano", "Bright acoustic piano", "Electric grand piano", "Honky-tonk piano", "Electric piano 1",
    "Electric piano 2", "Harpsichord", "Clavinet", "Celesta", "Glockenspiel", "Music box", "Vibraphone", "Marimba",
    "Xylophone", "Tubular bells", "Dulcimer", "Drawbar organ", "Percussive organ", "Rock organ", "Church organ",
    "Reed organ", "Accordion", "Harmonica", "Tango accordion", "Acoustic guitar (nylon)", "Acoustic guitar (steel)",
    "Electric guitar (jazz)", "Electric guitar (clean)", "Electric guitar (muted)", "Overdriven guitar",
    "Distortion guitar", "Guitar harmonics", "Acoustic bass", "Electric bass (finger)", "Electric bass (pick)",
    "Fretless bass", "Slap bass 1", "Slap bass 2", "Synth bass 1", "Synth bass 2", "Violin", "Viola", "Cello",
    "Contrabass", "Tremolo strings", "Pizzicato strings", "Orchestral harp", "Timpani", "String ensemble 1",
    "String ensemble 2", "Synth strings 1", "Synth strings 2", "Choir aahs", "Voice oohs", "Synth voice",
    "Orchestra hit", "Trumpet", "Trombone", "Tuba", "Muted trumpet", "French horn", "Brass section", "Synth brass 1",
    "Synth brass 2", "Soprano sax", "Alto sax", "Tenor sax", "Baritone sax", "Oboe", "English horn", "Bassoon",
    "Clarinet", "Piccolo", "Flute", "Recorder", "Pan flute", "Blown bottle", "Shakuhachi", "Whistle", "Ocarina",
    "Square lead synth", "Sawtooth lead synth", "Calliope lead synth", "Chiff lead synth", "Charang lead synth",
    "Voice lead synth", "Fifths lead synth", "Bass and lead synth", "New age pad", "Warm pad", "Polysynth pad",
    "Choir pad", "Bowed pad", "Metallic pad", "Halo pad", "Sweep pad", "Rain effect", "Soundtrack effect",
    "Crystal effect", "Atmosphere effect", "Brightness effect", "Goblins effect", "Echoes effect", "Sci-fi effect",
    "Sitar", "Banjo", "Shamisen", "Koto", "Kalimba", "Bagpipe", "Fiddle", "Shanai", "Tinkle bell", "Agogo",
    "Steel drums", "Woodblock", "Taiko drum", "Melodic tom", "Synth drum", "Reverse cymbal", "Guitar fret noise",
    "Breath noise", "Seashore", "Bird tweet", "Telephone ring", "Helicopter", "Applause", "Gunshot",
)

GM_DRUMS = {
    35: "Acoustic bass drum", 36: "Bass drum", 37: "Side stick", 38: "Acoustic snare", 39: "Hand clap",
    40: "Electric snare", 41: "Low floor tom", 42: "Closed hi-hat", 43: "High floor tom", 44: "Pedal hi-hat",
    45: "Low tom", 46: "Open hi-hat", 47: "Low-mid tom", 48: "Hi-mid tom", 49: "Crash cymbal 1", 50: "High tom",
    51: "Ride cymbal 1", 52: "Chinese cymbal", 53: "Ride bell", 54: "Tambourine", 55: "Splash cymbal", 56: "Cowbell",
    57: "Crash cymbal 2", 58: "Vibraslap", 59: "Ride cymbal 2", 60: "Hi bongo", 61: "Low bongo", 62: "Mute hi conga",
    63: "Open hi conga", 64: "Low conga", 65: "High timbale", 66: "Low timbale", 67: "High agogo", 68: "Low agogo",
    69: "Cabasa", 70: "Maracas", 71: "Short whistle", 72: "Long whistle", 73: "Short guiro", 74: "Long guiro",
    75: "Claves", 76: "Hi wood block", 77: "Low wood block", 78: "Mute cuica", 79: "Open cuica", 80: "Mute triangle",
    81: "Open triangle",
}
