"""DNA: encoding, the FASTA/FASTQ adapter, the strand/shift pair builder, k-mers,
whole genomes with reads drawn on the fly, and the demo data.
"""
